"""Scan planning, autofocus and z-stack capture: everything that moves the stage and takes frames."""
