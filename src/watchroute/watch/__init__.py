"""Watching: the parameters of a watch, the same for every transport, and opening one."""
