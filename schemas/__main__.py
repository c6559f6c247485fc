"""``python -m schemas``: regenerate the JSON Schema files."""

from schemas.export import write_all

for path in write_all():
    print(path)
