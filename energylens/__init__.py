"""energylens: predict energy (J) and latency (s) of LLM inference."""
