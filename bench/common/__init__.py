"""What the benchmarks share: servers in their own process groups (servers.py), engines
from the project's recipe (engines.py), a stand-in decoder with vLLM's layer interface
(standin.py), and where results go and what they record (results.py)."""
