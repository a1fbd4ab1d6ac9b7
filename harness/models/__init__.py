"""Models: cards per architecture, MindSpore and PyTorch networks, weights, exports, atc, the artifact cache."""
