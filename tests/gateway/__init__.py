"""Tests of the inline firewall's pure parts (policy, sanitising)."""
