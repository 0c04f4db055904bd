"""Evaluation runs of kind 'zeroshot' (text-to-image retrieval and zero-shot classification, eval/zeroshot.py).

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "alter table cbir.eval_run drop constraint eval_run_kind_check, add constraint eval_run_kind_check"
        " check (kind in ('retrieval', 'knn', 'linear', 'ablation', 'zeroshot'))"
    )


def downgrade() -> None:
    op.execute("delete from cbir.eval_run where kind = 'zeroshot'")
    op.execute(
        "alter table cbir.eval_run drop constraint eval_run_kind_check, add constraint eval_run_kind_check"
        " check (kind in ('retrieval', 'knn', 'linear', 'ablation'))"
    )
