from django.urls import path

from recognition import views

urlpatterns = [
    path("media/recordings/<int:pk>/", views.recording_audio, name="recording-audio"),
    path("healthz", views.healthz, name="healthz"),  # alias of /healthz/ready
    path("healthz/live", views.healthz_live, name="healthz-live"),
    path("healthz/ready", views.healthz_ready, name="healthz-ready"),
    path("metrics", views.metrics, name="metrics"),
]
