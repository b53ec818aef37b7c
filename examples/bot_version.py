"""The part of the example bot that updates (see bot_selfupdate.py)."""

VERSION = "1"
