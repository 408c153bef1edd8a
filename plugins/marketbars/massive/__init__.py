"""The vendor adapter (Massive, formerly Polygon.io): flat-file keys and headers, the CSV reader,
REST aggregates, the S3 and REST hooks. Hands everything on in ``marketbars.market``'s own shapes."""
