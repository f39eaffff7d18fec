"""Context-parallel strategies (one per file), their sharding, communication and LSE merge."""
