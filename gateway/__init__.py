"""The bundled servers: HTTP, FTP, SFTP download gateway and the job worker."""
