"""The axes of :class:`pytest_spqr.check.SpqrCheck`, one module each, on a shared base."""
