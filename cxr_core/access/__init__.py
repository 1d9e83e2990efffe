"""Who is who: roles and the actions they allow, sign-in settings, password hashes and pseudonyms.

``roles`` (the role table and :class:`~cxr_core.access.roles.Actor`, which the stores check),
``config`` (the sign-in mode of an install, trusted proxies, idle sign-out), ``passwords``
(Argon2id hashes of local accounts) and ``pseudonym`` (keyed hashes of identifiers in exports).
The users and the audit log themselves are tables of the review database
(:mod:`cxr_core.artifacts.user_store`, :mod:`cxr_core.artifacts.audit_log`).
"""
