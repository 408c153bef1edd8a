"""What the DAGs share: defaults and header keywords, mapping helpers and work items, the mapped
flat-file and REST task groups, the published-files listing, report folders, assets."""
