"""``{% load units %}``: ``{{ bytes|size }}`` and ``{{ timedelta|duration }}`` in the console
(``controlplane.humanize``)."""

from __future__ import annotations

from django import template

from controlplane import humanize

register = template.Library()
register.filter("size", humanize.size)
register.filter("duration", humanize.duration)
