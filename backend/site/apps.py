"""App config of the web site (label `site`: templates under site/, static files under site/)."""

from django.apps import AppConfig


class SiteConfig(AppConfig):
    name = "backend.site"
    label = "site"
    verbose_name = "Web site"
