"""Fine-tune or train from scratch: tune both on equal budgets, measure where scratch catches up."""

__version__ = "0.1.0"
