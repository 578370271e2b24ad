"""The write side: the `orders` topic projected into the PostgreSQL read model."""
