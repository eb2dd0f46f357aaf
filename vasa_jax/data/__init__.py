"""Data: record formats, media I/O, face tracking and head geometry, SynthTalk, preparation, the Grain pipelines."""
