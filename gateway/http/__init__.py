"""The HTTP edge: its middleware, the browser pages, the webhook receiver route and warm-up."""
