"""Test and benchmark support: synthetic models and kernel runners."""
