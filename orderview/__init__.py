"""Shared plumbing of orderview: configuration, bootstrap, logging."""
