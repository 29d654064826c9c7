"""Pagination: ``?page=N&page_size=M`` on every list, bounded so one request cannot ask for everything;
``?after=<id>`` (keyset paging) on every list of rows, for deep pages.

A page number costs an ``OFFSET``: the database walks every row before the page, so the last page of a
100,000-row list costs far more than the first. ``?after=<id>`` gives the ``page_size`` rows that come
after that id in the list's id order instead (results: ascending ids; recordings, batches and jobs:
newest first, by id), read through the index from where the last page ended, so page 1,000 costs what
page 1 does. Its answer has ``next`` (the URL of the following page, with ``after`` set to this page's
last id; ``null`` at the end), ``previous`` (``null``) and ``results``, and no ``count`` (counting is
the cost keyset paging avoids). Start with ``?after=`` (empty: from the list's first row). The filters
of a list apply as with page numbers.
"""
from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from recognition.errors import ServiceError


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000
    after_query_param = "after"

    def paginate_queryset(self, queryset, request, view=None):
        self.keyset = self.after_query_param in request.query_params
        if not self.keyset:
            return super().paginate_queryset(queryset, request, view)
        if not isinstance(queryset, QuerySet):
            raise ServiceError("invalid_params", "'after' pages lists of rows; this answer is one ranked list: use 'page'.")
        text = request.query_params[self.after_query_param].strip()
        try:
            after = int(text) if text else None
        except ValueError as exc:
            raise ServiceError("invalid_params", "'after' must be the id of the last row of the previous page.") from exc
        ordering = list(queryset.query.order_by or queryset.model._meta.ordering or ["pk"])
        descending = str(ordering[0]).startswith("-")
        if after is not None:
            queryset = queryset.filter(pk__lt=after) if descending else queryset.filter(pk__gt=after)
        size = self.get_page_size(request)
        rows = list(queryset.order_by("-pk" if descending else "pk")[: size + 1])
        self.request = request
        self.more = len(rows) > size
        self.rows = rows[:size]
        return self.rows

    def get_paginated_response(self, data):
        if not self.keyset:
            return super().get_paginated_response(data)
        return Response({"next": self._after_link(), "previous": None, "results": data})

    def _after_link(self) -> str | None:
        if not self.more or not self.rows:
            return None
        url = remove_query_param(self.request.build_absolute_uri(), self.page_query_param)
        return replace_query_param(url, self.after_query_param, self.rows[-1].pk)

    def get_schema_operation_parameters(self, view):
        return [*super().get_schema_operation_parameters(view), {
            "name": self.after_query_param, "required": False, "in": "query",
            "description": ("Keyset paging for deep pages: the rows after this id in the list's id order (empty: from "
                            "the first). The answer has next and results, no count."),
            "schema": {"type": "string"}}]

    def get_paginated_response_schema(self, schema):
        """The page's schema: ``count`` is given by numbered pages only (a keyset page has none)."""
        out = super().get_paginated_response_schema(schema)
        out["required"] = [name for name in out.get("required", []) if name != "count"]
        return out
