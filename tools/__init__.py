"""Developer tools of the project: benchmarks, generators and doc generators (not installed)."""
