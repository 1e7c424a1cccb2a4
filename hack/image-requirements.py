"""Print the project's requirements for the given extras, one per line (for the image's dependency layer).

The images install their dependencies from this list before the project itself, so a change to the
sources rebuilds only the small layer with the project's wheel. Only the standard library: it runs in
the base image.
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as pyproject:
    project = tomllib.load(pyproject)["project"]
extras = project["optional-dependencies"]
unknown = sorted(set(sys.argv[2:]) - set(extras))
if unknown:
    sys.exit(f"image-requirements: no extra named {', '.join(unknown)} in {sys.argv[1]} (extras: {', '.join(extras)})")
print("\n".join(dict.fromkeys([*project["dependencies"], *(r for extra in sys.argv[2:] for r in extras[extra])])))
