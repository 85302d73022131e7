"""Fine-tuning from upstream universal models: downstream plans, backbone export, v1 checkpoint import."""
