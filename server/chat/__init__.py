"""Chat completions, one concern per module: the request's settings (request.py), one
engine request and its metrics (run.py), the compression report (report.py), and the two
ways of answering, whole with disconnect polling (completion.py) or as server-sent
events (sse.py). The route itself is server/routers/chat.py."""
