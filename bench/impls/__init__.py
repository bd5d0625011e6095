"""Implementation adapters: one module per catalog implementation (ours and the peers)."""
