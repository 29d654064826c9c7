from django.urls import include, path, re_path
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from recognition.api import views

router = DefaultRouter()
router.register("recordings", views.RecordingViewSet, basename="recording")
router.register("batches", views.BatchViewSet, basename="batch")
router.register("jobs", views.JobViewSet, basename="job")
router.register("models", views.ModelVersionViewSet, basename="model")

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("predict/", views.PredictView.as_view(), name="predict"),
    re_path(r"^predict/(?P<pk>[0-9a-f]{32})/$", views.PredictResultView.as_view(), name="predict-result"),
    path("", include(router.urls)),
]
