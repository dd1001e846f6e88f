"""The enroll function: object events of the faces bucket in, gallery entries out."""
