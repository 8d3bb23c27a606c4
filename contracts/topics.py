"""The topics' default names (each is a setting: ``DARKROOM_*_TOPIC``). Records and schemas: contracts/records.py."""

from __future__ import annotations

#: new uploads, key = photo_id (schemas/photo-uploads.schema.json)
UPLOADS = "photo-uploads"
#: tag events for search indexing, key = photo_id (schemas/photo-tags.schema.json)
TAGS = "photo-tags"
#: bad input with a reason code and the original value (schemas/photo-uploads-dlq.schema.json)
DLQ = "photo-uploads-dlq"
#: a candidate (shadow) model version's tag events: photo-tags' schema plus ``"shadow": true``; never indexed
#: (schemas/photo-tags-shadow.schema.json, docs/rollout.md)
SHADOW_TAGS = "photo-tags-shadow"
#: users' tag corrections, key = photo_id (schemas/photo-tag-edits.schema.json)
EDITS = "photo-tag-edits"
#: edits that were refused, with a reason code and the original value (schemas/photo-tag-edits-dlq.schema.json)
EDITS_DLQ = "photo-tag-edits-dlq"
#: per photo, the served version's backbone embedding (float16), key = photo_id; opt-in
#: (``DARKROOM_PUBLISH_EMBEDDINGS``, schemas/photo-embeddings.schema.json)
EMBEDDINGS = "photo-embeddings"
