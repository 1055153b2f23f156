"""Remotes: versions kept in object storage (S3-compatible, or a shared directory).

Modules: `backend` (the contract every object store meets, and its errors), `filebackend`
(file:// directories), `s3backend` (s3:// through boto3), `layout` (key names and the remote's
own records), `remotes` (the remotes a store knows, in `STORE/remotes.json`).
Never imports: daemon, trio, pyfuse3.
"""
