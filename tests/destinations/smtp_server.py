"""A real SMTP server for Herald's email tests: aiosmtpd (PyPI) on 127.0.0.1:<port>.

Usage: python smtp_server.py <port> <dir> [<user> <password>]

Every accepted message is parsed with Python's own `email` package (an independent reader)
and written to <dir>/<n>.json as {mail_from, rcpt_tos, headers: [[name, value], ...], text,
attachments: [{filename, content_type, data_b64}]}. With <user> and <password>, AUTH PLAIN and
LOGIN are offered (without TLS) and required; other credentials get 535.

The reply to DATA is read from <dir>/reply for every message: absent or empty means
"250 OK"; otherwise the file's first line is sent as is (e.g. "451 4.3.0 try again later" or
"550 5.1.1 no such mailbox") and the message is not stored.
"""

import asyncio
import base64
import email
import email.policy
import json
import os
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, folder = int(sys.argv[1]), sys.argv[2]
user, password = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
os.makedirs(folder, exist_ok=True)


class Handler:
    def __init__(self):
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        try:
            with open(os.path.join(folder, "reply")) as f:
                reply = f.readline().strip()
        except FileNotFoundError:
            reply = ""
        if reply:
            return reply
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = ""
        attachments = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True) or b""
            if part.get_filename():
                attachments.append(
                    {
                        "filename": part.get_filename(),
                        "content_type": part.get_content_type(),
                        "data_b64": base64.b64encode(payload).decode(),
                    }
                )
            elif part.get_content_type() == "text/plain" and not text:
                text = payload.decode(part.get_content_charset() or "utf-8")
        self.n += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": [[k, str(v)] for k, v in msg.items()],
            "text": text,
            "attachments": attachments,
        }
        tmp = os.path.join(folder, f".{self.n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(folder, f"{self.n:06}.json"))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password:
        return AuthResult(success=True)
    return AuthResult(success=False, handled=False)


kwargs = {}
if user is not None:
    kwargs = {
        "authenticator": authenticator,
        "auth_required": True,
        "auth_require_tls": False,
    }
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
finally:
    controller.stop()
