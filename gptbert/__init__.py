"""gptbert: pretrain, evaluate and export GPT-BERT models (Charpentier & Samuel, 2024)."""

__version__ = "0.1.0"
