"""Shared by every test directory: pytest puts this folder on sys.path, so test modules can
``import kit_test_helpers``."""
