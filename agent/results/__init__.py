"""The miLab output format: file names, the analyze_result.json schema and its writers."""
