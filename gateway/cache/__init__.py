"""V3 status pages kept between requests: in this process, and shared through Redis."""
