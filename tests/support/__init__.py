"""Helpers shared by test folders: real processes started on free loopback ports."""
