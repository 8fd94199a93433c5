"""Job files in S3-compatible storage (aioboto3): the REST file endpoints,
blueprint handlers' ``task_files`` and the cleanup of ended jobs' files.

Only this package imports aioboto3; the composition root imports it only when
``S3_ENDPOINT_URL`` is set.
"""

from avtomatika.files.cleanup import FileCleanup
from avtomatika.files.job_files import JobFiles
from avtomatika.files.names import check_filename, object_key
from avtomatika.files.s3 import MAX_EXPIRES_IN, S3Files

__all__ = ["MAX_EXPIRES_IN", "FileCleanup", "JobFiles", "S3Files", "check_filename", "object_key"]
