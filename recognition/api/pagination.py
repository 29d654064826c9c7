"""Pagination: ``?page=N&page_size=M`` on every list, bounded so one request cannot ask for everything."""
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000
