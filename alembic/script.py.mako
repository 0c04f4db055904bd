"""${message}

Create Date: ${create_date}
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
% if branch_labels:
branch_labels = ${repr(branch_labels)}
% endif
% if depends_on:
depends_on = ${repr(depends_on)}
% endif
# write alembic/sql/${up_revision}_x.sql and ${up_revision}_x.down.sql, then name them here
upgrade, downgrade = sql_steps("${up_revision}_x")
