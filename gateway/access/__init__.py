"""What both edges share about who gets in: admission control and client tokens."""
