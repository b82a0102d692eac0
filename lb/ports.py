"""Default ports shared by the balancer and the commands that talk to it.

Apart from lb.config so that the admin API's thin clients (`caslb status`...) can know
the default port without importing the config model and its probes.
"""

DEFAULT_ADMIN_PORT = 9090
