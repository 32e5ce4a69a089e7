"""Ready tasks: data + causal model + network + alignment + config, trainable from one command."""
