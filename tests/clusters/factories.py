"""Test data for the clusters app. Factories write rows directly: use services to test behaviour."""

from __future__ import annotations

import factory

from clusters.models import Cluster, ClusterAgentToken, Organization, Queue


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ["slug"]

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class ClusterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cluster

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"cluster-{n}")


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue

    cluster = factory.SubFactory(ClusterFactory)
    key = factory.Sequence(lambda n: f"queue-{n}")
    instance_shape = ""

    class Params:
        hosted = factory.Trait(instance_shape="LINUX_AMD64_2X4")


class ClusterAgentTokenFactory(factory.django.DjangoModelFactory):
    """Pass ``secret=...``; the factory stores only its hash, as the service does."""

    class Meta:
        model = ClusterAgentToken
        exclude = ["secret"]

    cluster = factory.SubFactory(ClusterFactory)
    description = "test agent"
    secret = factory.Sequence(lambda n: f"bkct_test-secret-{n}")
    token_hash = factory.LazyAttribute(lambda o: ClusterAgentToken.hash_secret(o.secret))
    token_prefix = factory.LazyAttribute(lambda o: o.secret[:9])
