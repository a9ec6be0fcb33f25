"""Where media comes from: uploads, data: URLs, allowed https URLs, allowed local paths."""
