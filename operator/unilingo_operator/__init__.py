"""The UnilingoProviderPolicy operator (kopf).

Platform engineers declare provider limits as ``UnilingoProviderPolicy`` resources
(group ``unilingo.io``, short name ``upp``). The operator validates each one through the
domain model (``unilingo.policy.ProviderPolicy``), writes it to Redis atomically under a new
revision (``unilingo.policy.PolicyStore``), reports what is in force in the resource's
status, posts events, restores the defaults when a policy is deleted, and repairs
Redis when it loses a policy.

Modules: ``crd`` (the CRD, generated from the model), ``config`` (environment),
``kube`` (login and the peering object), ``reconcile`` (what to write, and when),
``status`` (conditions and the status patch), ``handlers`` (the kopf registrations, thin),
``__main__`` (``python -m unilingo_operator`` = ``make operator``).

The package is ``unilingo_operator`` on purpose: ``operator`` is a standard-library module.
"""

GROUP = "unilingo.io"
VERSION = "v1alpha1"
KIND = "UnilingoProviderPolicy"
PLURAL = "unilingoproviderpolicies"
SINGULAR = "unilingoproviderpolicy"
SHORT_NAMES = ("upp",)
CRD_NAME = f"{PLURAL}.{GROUP}"

# kopf's own bookkeeping lives under our domain, in annotations (never in our status schema).
FINALIZER = f"{GROUP}/restore-defaults"
ANNOTATION_PREFIX = GROUP
