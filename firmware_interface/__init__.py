"""Stage firmware drivers, the serial link they share, and a firmware emulator for tests."""
