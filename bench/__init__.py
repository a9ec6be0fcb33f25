"""The benchmarks. Run each from the repository root as `python -m bench.<name>`;
bench/README.md says what each measures and how to read it, bench/common/ holds what
they share."""
