"""Tests of sipwarden.output: the analyze document, FS.38 events and the HTML report."""
