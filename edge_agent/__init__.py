"""The edgefed agent: runs on every node, reports capacity, runs what the
controller assigns, and keeps running it when the controller is gone."""
