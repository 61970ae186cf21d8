#!/usr/bin/env python
"""Generate the UnilingoProviderPolicy CRD (and kopf's peering CRDs) from the policy model.

Writes manifests/crd/ and charts/unilingo/templates/crds/ from one source; ``--check`` only compares.
The same as ``python -m unilingo_operator.crd``.
"""

import sys

from unilingo_operator.crd import main

if __name__ == "__main__":
    sys.exit(main())
