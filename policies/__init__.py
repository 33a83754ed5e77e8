"""The YAML model: what operators write, validated into frozen domain types."""
