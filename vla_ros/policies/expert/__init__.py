"""The simulator's scripted expert behind the policy interface (ground truth, not a VLA)."""
