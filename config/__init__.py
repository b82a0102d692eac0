"""The lab configs of `caslb demo`: in the wheel, this directory is the package `lb.lab`."""
